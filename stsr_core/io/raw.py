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
from .base import SeriesReader, SeriesWriter, keep_arrays, remove_quietly

DEFAULT_PATTERN = "{variable}/{variable}-{index:04d}.raw"


def _text(value: Any) -> str:
    """A JSON value as an error message quotes it: one line, at most 60 characters."""
    t = json.dumps(value) if not isinstance(value, str) else repr(value)
    return t if len(t) <= 60 else t[:57] + "..."


def _whole(value: Any, path: str, key: str, minimum: Optional[int] = None) -> int:
    """``value`` as an int (a JSON integer, an integral float or a string of digits)."""
    n: Optional[int] = None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        n = int(value)
    if n is None or (minimum is not None and n < minimum):
        need = "a whole number" + (f" >= {minimum}" if minimum is not None else "")
        raise StsrError(f"'{path}': {key} must be {need}, got {_text(value)}")
    return n


def _floats(value: Any, path: str, key: str, count: Optional[int] = None) -> List[float]:
    """``value`` as a list of finite floats (``count`` of them when given)."""
    ok = isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                         for v in value)
    out = [float(v) for v in value] if ok else []
    if not ok or not all(np.isfinite(out)) or (count is not None and len(out) != count):
        need = f"{count} finite numbers" if count is not None else "a list of finite numbers"
        raise StsrError(f"'{path}': {key} must be {need}, got {_text(value)}")
    return out


def _names(value: Any, path: str, key: str) -> List[str]:
    if not isinstance(value, list) or not value or \
            not all(isinstance(v, str) and v for v in value):
        raise StsrError(f"'{path}': {key} must be a list of names, got {_text(value)}")
    if len(set(value)) != len(value):
        raise StsrError(f"'{path}': {key} names one twice: {_text(value)}")
    return list(value)


def _describe(path: str) -> Dict[str, Any]:
    """The JSON description checked and completed: dims, variables, times, pattern, start,
    origin, spacing, components, folder. Each key is checked for its type and range, the
    pattern by naming the first and the last step's files (which must exist)."""
    if not os.path.isfile(path):
        raise StsrError(f"file '{path}' does not exist")
    try:
        with open(path) as fh:
            desc = json.load(fh)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # JSONDecodeError too
        raise StsrError(f"'{path}' is not valid JSON ({exc})") from None
    if not isinstance(desc, dict):
        raise StsrError(f"'{path}' must hold a JSON object describing the raw files")
    for key in ("dims", "variables"):
        if key not in desc:
            raise StsrError(f"'{path}' lacks the key '{key}' (see docs/formats.md)")
    dims = desc["dims"]
    if not isinstance(dims, list) or len(dims) != 3:
        raise StsrError(f"'{path}': dims must be three integers, got {_text(dims)}")
    nx, ny, nz = (_whole(d, path, "dims", minimum=1) for d in dims)
    names = _names(desc["variables"], path, "variables")
    if "times" in desc:
        times = _floats(desc["times"], path, "times")
        if not times or any(b <= a for a, b in zip(times, times[1:])):
            raise StsrError(f"'{path}': times must be a non-empty, strictly increasing list, "
                            f"got {_text(desc['times'])}")
        n_times = len(times)
    elif "n_times" in desc:
        n_times = _whole(desc["n_times"], path, "n_times", minimum=1)
        times = []
    else:
        raise StsrError(f"'{path}' needs 'times' (a list) or 'n_times'")
    pattern = desc.get("pattern", DEFAULT_PATTERN)
    if not isinstance(pattern, str):
        raise StsrError(f"'{path}': pattern must be a string, got {_text(pattern)}")
    start = _whole(desc.get("index_start", 1), path, "index_start")
    components = desc.get("components", {})
    if not isinstance(components, dict) or not all(
            isinstance(v, list) and all(isinstance(c, str) for c in v)
            for v in components.values()):
        raise StsrError(f"'{path}': components must map each vector's name to its "
                        f"variables' names, got {_text(components)}")
    folder = os.path.dirname(os.path.abspath(path))
    for i in (0, n_times - 1):      # a pattern that cannot name the files, a step too many
        f = _step_file(path, folder, pattern, names[0], start + i)
        if not os.path.isfile(f):
            raise StsrError(f"'{path}': the file of '{names[0]}' at timestep {i}, '{f}', "
                            "does not exist")
    return {"dims": (nx, ny, nz), "variables": names,
            "times": times or [float(t) for t in range(n_times)],
            "pattern": pattern, "start": start,
            "origin": tuple(_floats(desc.get("origin", [0, 0, 0]), path, "origin", 3)),
            "spacing": _spacing(desc.get("spacing", [1, 1, 1]), path),
            "components": {str(k): list(v) for k, v in components.items()},
            "folder": folder}


def _spacing(value: Any, path: str) -> tuple:
    spacing = _floats(value, path, "spacing", 3)
    if min(spacing) <= 0:
        raise StsrError(f"'{path}': spacing must be positive, got {_text(value)}")
    return tuple(spacing)


def _step_file(path: str, folder: str, pattern: str, variable: str, index: int) -> str:
    """The file ``pattern`` names for ``variable`` at file number ``index``."""
    try:
        name = pattern.format(variable=variable, index=index, t=index)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        raise StsrError(f"'{path}': pattern {_text(pattern)} cannot name the files "
                        f"({type(exc).__name__}: {exc}); its fields are {{variable}} and "
                        "{index}") from None
    return os.path.join(folder, name)


def _check_file(path: str, f: str, n: str, i: int, expected: int,
                dims: Sequence[int]) -> None:
    if not os.path.isfile(f):
        raise StsrError(f"array '{n}' is missing at timestep {i}: '{f}' does not exist "
                        f"(named by '{path}')")
    size = os.path.getsize(f)
    if size != expected:
        nx, ny, nz = dims
        raise StsrError(f"'{f}' has {size} bytes; expected {expected} "
                        f"({nx}x{ny}x{nz} float32): truncated or wrong dims (in '{path}')")


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
    ``abort()`` only removes ``.partial`` files. Slabs are appended to their step's files."""

    merge = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.folder = os.path.dirname(self.path)

    def _file(self, n: str, i: int) -> str:
        return os.path.join(self.folder, DEFAULT_PATTERN.format(variable=n, index=1 + i))

    def _write_slab(self, i: int, z0: int, arrays: Dict[str, np.ndarray]) -> None:
        """Each variable's rows appended to its step's ``.partial`` file (started anew by
        the first slab), flushed to the disk with the step's last row."""
        last = z0 + next(iter(arrays.values())).shape[0] == self.grid.dims[2]
        for n in self.variables:
            f = self._file(n, i) + ".partial"
            if z0 == 0:
                os.makedirs(os.path.dirname(f), exist_ok=True)
            with open(f, "wb" if z0 == 0 else "ab") as fh:   # an OSError: SeriesWriter says
                fh.write(memoryview(np.ascontiguousarray(arrays[n], dtype="<f4")).cast("B"))
                if last:                                        # [nz, Y, X], x fastest
                    fh.flush()
                    os.fsync(fh.fileno())

    def _end_step(self, i: int) -> None:
        pass                   # renamed with the others at close: the JSON lists them all

    def _drop_step(self, i: int) -> None:
        for n in self.variables:
            remove_quietly(self._file(n, i) + ".partial")

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
            try:                              # a variable's folder, if this left it empty
                os.rmdir(os.path.dirname(self._file(n, 0)))
            except OSError:
                pass


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
        if not names:
            raise StsrError(f"'{path}': no variables to read")
        comps = {k: v for k, v in self.desc["components"].items() if all(c in names for c in v)}
        super().__init__(path, Grid(self.desc["dims"], self.desc["origin"],
                                    self.desc["spacing"]), self.desc["times"], names, comps)

    def read_step(self, i: int) -> Dict[str, np.ndarray]:
        i = self._check(i)
        d = self.desc
        nx, ny, nz = self.grid.dims
        out = {}
        for n in self.variables:
            f = _step_file(self.path, d["folder"], d["pattern"], n, d["start"] + i)
            _check_file(self.path, f, n, i, nx * ny * nz * 4, (nx, ny, nz))
            out[n] = np.fromfile(f, dtype="<f4").reshape(nz, ny, nx)  # [Z, Y, X]
        return out
