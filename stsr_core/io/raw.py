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
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import StsrError
from ..series import VolumeSeries

DEFAULT_PATTERN = "{variable}/{variable}-{index:04d}.raw"


def read_raw(path: str, arrays: Optional[Sequence[str]] = None) -> VolumeSeries:
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
    pattern = desc.get("pattern", DEFAULT_PATTERN)
    start = int(desc.get("index_start", 1))
    names = [str(v) for v in desc["variables"]]
    if arrays:         # a multi-component name stands for its scalar variables
        groups = dict(desc.get("components", {}))
        arrays = [str(p) for a in arrays for p in groups.get(a, [a])]
        unknown = [a for a in arrays if a not in names]
        if unknown:
            raise StsrError(f"no array named {unknown} in '{path}'; available: {', '.join(names)}")
        names = [n for n in names if n in arrays]
    folder = os.path.dirname(os.path.abspath(path))
    expected = nx * ny * nz * 4
    variables: Dict[str, np.ndarray] = {}
    for n in names:
        steps = []
        for i in range(len(times)):
            f = os.path.join(folder, pattern.format(variable=n, index=start + i, t=start + i))
            if not os.path.isfile(f):
                raise StsrError(f"array '{n}' is missing at timestep {i}: '{f}' does not exist")
            size = os.path.getsize(f)
            if size != expected:
                raise StsrError(f"'{f}' has {size} bytes; expected {expected} "
                                f"({nx}x{ny}x{nz} float32): truncated or wrong dims")
            steps.append(np.fromfile(f, dtype="<f4").reshape(nz, ny, nx))
        variables[n] = np.stack(steps)
    components = {str(k): [str(c) for c in v]
                  for k, v in dict(desc.get("components", {})).items()
                  if all(str(c) in variables for c in v)}
    return VolumeSeries(times=times, variables=variables,
                        origin=tuple(desc.get("origin", (0, 0, 0))),  # type: ignore[arg-type]
                        spacing=tuple(desc.get("spacing", (1, 1, 1))),  # type: ignore[arg-type]
                        components=components, source=path)


def write_raw(series: VolumeSeries, path: str) -> List[str]:
    folder = os.path.dirname(os.path.abspath(path))
    written = []
    for n, a in series.variables.items():
        os.makedirs(os.path.join(folder, n), exist_ok=True)
        for i in range(series.n_times):
            f = os.path.join(folder, DEFAULT_PATTERN.format(variable=n, index=1 + i))
            a[i].astype("<f4").tofile(f + ".tmp")
            os.replace(f + ".tmp", f)
            written.append(f)
    desc = {"dims": list(series.dims), "variables": list(series.variables),
            "times": [float(t) for t in series.times], "pattern": DEFAULT_PATTERN,
            "index_start": 1, "origin": list(series.origin), "spacing": list(series.spacing)}
    if series.components:
        desc["components"] = {k: list(v) for k, v in series.components.items()}
    with open(path + ".tmp", "w") as fh:
        json.dump(desc, fh, indent=2)
    os.replace(path + ".tmp", path)
    return [path] + written
