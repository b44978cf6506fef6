"""The reference code's raw layout: one little-endian float32 ``.raw`` file per variable per
timestep, x fastest, described by a JSON file::

    {"dims": [nx, ny, nz], "variables": ["H", "GT"], "times": [0.0, 1.0, ...],
     "pattern": "{variable}/{variable}-{index:04d}.raw", "index_start": 1,
     "origin": [0, 0, 0], "spacing": [1, 1, 1]}

``pattern`` is relative to the JSON file's folder; ``{index}`` counts from ``index_start``
(the reference numbers files from 1); ``times`` may be replaced by ``"n_times": T``
(times 0..T-1); optional ``"components": {"velocity": ["velocity_0", ...]}`` names the
scalar variables that form one vector array.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import StsrError
from ..grid import Grid
from ..series import VolumeSeries
from .stream import SeriesReader, SeriesWriter, fsync_file, keep_arrays, remove_quietly

DEFAULT_PATTERN = "{variable}/{variable}-{index:04d}.raw"


def _describe(path: str) -> Dict[str, Any]:
    """The JSON description checked and completed: dims, variables, times, pattern, start,
    origin, spacing, components, folder."""
    if not os.path.isfile(path):
        raise StsrError(f"file '{path}' does not exist")
    try:
        with open(path) as fh:
            desc = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StsrError(f"'{path}' is not valid JSON ({exc})") from None
    if not isinstance(desc, dict):
        raise StsrError(f"'{path}' must hold a JSON object describing the raw files")
    for key in ("dims", "variables"):
        if key not in desc:
            raise StsrError(f"'{path}' lacks the key '{key}' (see docs/formats.md)")
    try:
        nx, ny, nz = (int(d) for d in desc["dims"])
    except (TypeError, ValueError):
        raise StsrError(f"'{path}': dims must be three integers, got {desc['dims']}") from None
    if "times" in desc:
        times = [float(t) for t in desc["times"]]
    elif "n_times" in desc:
        times = [float(t) for t in range(int(desc["n_times"]))]
    else:
        raise StsrError(f"'{path}' needs 'times' (a list) or 'n_times'")
    names = [str(v) for v in desc["variables"]]
    return {"dims": (nx, ny, nz), "variables": names, "times": times,
            "pattern": desc.get("pattern", DEFAULT_PATTERN),
            "start": int(desc.get("index_start", 1)),
            "origin": tuple(desc.get("origin", (0, 0, 0))),
            "spacing": tuple(desc.get("spacing", (1, 1, 1))),
            "components": {str(k): [str(c) for c in v]
                           for k, v in dict(desc.get("components", {})).items()},
            "folder": os.path.dirname(os.path.abspath(path))}


def _check_file(f: str, n: str, i: int, expected: int, dims: Sequence[int]) -> None:
    if not os.path.isfile(f):
        raise StsrError(f"array '{n}' is missing at timestep {i}: '{f}' does not exist")
    size = os.path.getsize(f)
    if size != expected:
        nx, ny, nz = dims
        raise StsrError(f"'{f}' has {size} bytes; expected {expected} "
                        f"({nx}x{ny}x{nz} float32): truncated or wrong dims")


def read_raw(path: str, arrays: Optional[Sequence[str]] = None) -> VolumeSeries:
    reader = RawReader(path, arrays)
    steps = [reader.read_step(i) for i in range(reader.n_times)]
    variables = {n: np.stack([s[n] for s in steps]) for n in reader.variables}  # [T, Z, Y, X]
    return VolumeSeries(times=reader.times, variables=variables, origin=reader.grid.origin,
                        spacing=reader.grid.spacing, components=reader.components, source=path)


class RawWriter(SeriesWriter):
    """The raw layout, one ``.raw`` per variable per step (components stay separate scalar
    files, named in the JSON's ``components``). Each file is written as ``NAME.raw.partial``
    beside its final name; ``close()`` renames them all and then writes the JSON (atomically),
    so an old output at the same place is intact until the new one is complete, and
    ``abort()`` only removes ``.partial`` files."""

    merge = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.folder = os.path.dirname(self.path)

    def _file(self, n: str, i: int) -> str:
        return os.path.join(self.folder, DEFAULT_PATTERN.format(variable=n, index=1 + i))

    def _write(self, i: int, arrays: Dict[str, np.ndarray]) -> None:
        for n in self.variables:
            f = self._file(n, i) + ".partial"
            try:
                os.makedirs(os.path.dirname(f), exist_ok=True)
                arrays[n].astype("<f4", copy=False).tofile(f)       # [Z, Y, X], x fastest
                fsync_file(f)
            except OSError as exc:
                remove_quietly(f)
                raise StsrError(f"could not write '{f}': {exc.strerror}") from None

    def _finish(self) -> List[str]:
        written = []
        for n in self.variables:
            for i in range(self.n_times):
                os.replace(self._file(n, i) + ".partial", self._file(n, i))
                written.append(self._file(n, i))
        desc = {"dims": list(self.grid.dims), "variables": list(self.variables),
                "times": [float(t) for t in self.times], "pattern": DEFAULT_PATTERN,
                "index_start": 1, "origin": list(self.grid.origin),
                "spacing": list(self.grid.spacing)}
        if self.components:
            desc["components"] = {k: list(v) for k, v in self.components.items()}
        tmp = os.path.join(self.folder, f".{os.path.basename(self.path)}.tmp")
        with open(tmp, "w") as fh:
            json.dump(desc, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        return [self.path] + written

    def _discard(self) -> None:
        for n in self.variables:
            for i in range(self.n_times):
                remove_quietly(self._file(n, i) + ".partial")


class RawReader(SeriesReader):
    """Step by step over the raw layout: each ``read_step`` reads one file per variable."""

    def __init__(self, path: str, arrays: Optional[Sequence[str]] = None) -> None:
        self.desc = _describe(path)
        if arrays is not None:   # a vector's name stands for its components, in asked order
            arrays = list(dict.fromkeys(p for a in arrays
                                        for p in self.desc["components"].get(a, [a])))
        names = keep_arrays(self.desc["variables"], arrays, path)
        if arrays is not None:
            names = list(arrays)
        comps = {k: v for k, v in self.desc["components"].items() if all(c in names for c in v)}
        super().__init__(path, Grid(self.desc["dims"], self.desc["origin"],
                                    self.desc["spacing"]), self.desc["times"], names, comps)

    def read_step(self, i: int) -> Dict[str, np.ndarray]:
        i = self._check(i)
        d = self.desc
        nx, ny, nz = self.grid.dims
        out = {}
        for n in self.variables:
            f = os.path.join(d["folder"], d["pattern"].format(variable=n, index=d["start"] + i,
                                                               t=d["start"] + i))
            _check_file(f, n, i, nx * ny * nz * 4, (nx, ny, nz))
            out[n] = np.fromfile(f, dtype="<f4").reshape(nz, ny, nx)  # [Z, Y, X]
        return out
